# tests/gpu/gpu.cmake: programs of the GPU check (tests/gpu/check.sh) and
# bench/infer-gpu, included by kernels/cuda/cuda.cmake when CUDA is found.
# They are built (so CI compiles them) but are not ctest tests: they need a
# GPU and exit 2 ("no CUDA device") without one. At the end, three ctests that
# need no GPU.
add_executable(check_gpu_ops ${CMAKE_CURRENT_LIST_DIR}/check_ops.c)
target_link_libraries(check_gpu_ops PRIVATE commons_kernels m)

# commons_infer / commons_format are defined by inference/, added after kernels/.
add_executable(check_gpu_model ${CMAKE_CURRENT_LIST_DIR}/check_model.c)
target_link_libraries(check_gpu_model PRIVATE commons_infer m)

add_executable(check_gpu_batch ${CMAKE_CURRENT_LIST_DIR}/check_batch.c)
target_link_libraries(check_gpu_batch PRIVATE commons_batch m)

add_executable(check_gpu_mkvocab ${CMAKE_CURRENT_LIST_DIR}/mkvocab.c)
target_link_libraries(check_gpu_mkvocab PRIVATE commons_format)

add_executable(bench_infer_gpu ${PROJECT_SOURCE_DIR}/bench/infer-gpu/bench_infer_gpu.c)
target_link_libraries(bench_infer_gpu PRIVATE commons_batch CUDA::cudart m)

add_executable(bench_step_gpu ${PROJECT_SOURCE_DIR}/bench/infer-gpu/bench_step_gpu.c)
target_link_libraries(bench_step_gpu PRIVATE commons_kernels CUDA::cudart)

# ctests that need no GPU (they also hold on a GPU machine)
add_executable(test_kernels_copy_gather ${CMAKE_CURRENT_LIST_DIR}/test_copy_gather.c)
target_link_libraries(test_kernels_copy_gather PRIVATE commons_kernels)
add_test(NAME kernels_copy_gather COMMAND test_kernels_copy_gather)
add_test(NAME inference.run.gpu_refused
         COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/run_refused.sh $<TARGET_FILE:commons-run>)
add_executable(test_batch_paged ${CMAKE_CURRENT_LIST_DIR}/test_batch_paged.c)
target_link_libraries(test_batch_paged PRIVATE commons_batch m)
# the synthetic serve models (inference/serve.cmake's fixture): a Llama and a Gemma 3
# with a sliding window of 8
add_test(NAME inference.batch.paged
         COMMAND test_batch_paged ${PROJECT_BINARY_DIR}/inference/serve-models/llama.gguf
                 ${PROJECT_BINARY_DIR}/inference/serve-models/gemma3.gguf)
set_tests_properties(inference.batch.paged PROPERTIES FIXTURES_REQUIRED serve_models TIMEOUT 300)
