# serve.cmake: the paged KV cache and batched forward step (library commons_batch,
# builds everywhere, like commons_infer) and commons-serve, the nng/JSON serving daemon
# (only in the full build: it needs nng and jansson). Included by inference/CMakeLists.txt.
add_library(commons_batch STATIC
  ${CMAKE_CURRENT_LIST_DIR}/paged_kv.c
  ${CMAKE_CURRENT_LIST_DIR}/batch.c
)
target_include_directories(commons_batch PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(commons_batch PUBLIC commons_infer)

# Small synthetic models for the serve tests: a Llama with GQA and a Gemma 3 with a
# sliding window of 8 (so windowed attention crosses blocks). Regenerated, never stored.
set(_serve_models ${CMAKE_CURRENT_BINARY_DIR}/serve-models)
file(MAKE_DIRECTORY ${_serve_models})
set(_vocab_spm ${COMMONS_SHARED_DATA}/vocab/ggml-vocab-llama-spm.gguf)
add_test(NAME inference.serve.mkmodel.llama
         COMMAND commons-mkmodel --vocab ${_vocab_spm} --out ${_serve_models}/llama.gguf
                 --arch llama --embd 128 --heads 4 --kv-heads 2 --ff 256 --layers 2
                 --ctx 512 --type q8_0 --tied)
add_test(NAME inference.serve.mkmodel.gemma3
         COMMAND commons-mkmodel --vocab ${_vocab_spm} --out ${_serve_models}/gemma3.gguf
                 --arch gemma3 --embd 64 --heads 2 --kv-heads 1 --head-dim 32 --ff 128
                 --layers 6 --window 8 --ctx 512 --type q8_0)
set_tests_properties(inference.serve.mkmodel.llama inference.serve.mkmodel.gemma3
                     PROPERTIES FIXTURES_SETUP serve_models)

if(CHECK_FOUND)
  add_executable(test_batch ${CMAKE_CURRENT_LIST_DIR}/tests/test_batch.c)
  target_link_libraries(test_batch PRIVATE commons_batch PkgConfig::CHECK)
  add_test(NAME inference.batch
           COMMAND test_batch ${_serve_models}/llama.gguf ${_serve_models}/gemma3.gguf)
  set_tests_properties(inference.batch PROPERTIES FIXTURES_REQUIRED serve_models TIMEOUT 300)
  add_test(NAME inference.batch.default_model
           COMMAND test_batch ${CMAKE_SOURCE_DIR}/models/gemma-3-270m-q4_k_m.gguf)
  set_tests_properties(inference.batch.default_model PROPERTIES
                       FIXTURES_REQUIRED default_model TIMEOUT 600)
endif()

# commons-serve itself: nng + jansson (+ cm_log from common/), full build only.
if(NOT COMMONS_INFERENCE_ONLY)
  add_executable(commons-serve
    ${CMAKE_CURRENT_LIST_DIR}/serve.c
    ${CMAKE_CURRENT_LIST_DIR}/serve_engine.c
    ${CMAKE_CURRENT_LIST_DIR}/serve_rpc.c
    ${CMAKE_CURRENT_LIST_DIR}/serve_text.c
  )
  target_link_libraries(commons-serve PRIVATE commons_dist commons_batch commons_common nng::nng
                        PkgConfig::JANSSON Threads::Threads)
endif()
if(NOT COMMONS_INFERENCE_ONLY AND CHECK_FOUND)
  add_executable(test_serve_text ${CMAKE_CURRENT_LIST_DIR}/tests/test_serve_text.c
                                 ${CMAKE_CURRENT_LIST_DIR}/serve_text.c)
  target_link_libraries(test_serve_text PRIVATE commons_batch nng::nng PkgConfig::CHECK)
  add_test(NAME inference.serve.text COMMAND test_serve_text)
endif()

# commons-serve end to end on the default model (chat messages, concurrent prompts);
# tests/integration/test_serve.py (ctest integration.serve) covers the synthetic model.
if(NOT COMMONS_INFERENCE_ONLY)
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  add_test(NAME inference.serve.default_model
           COMMAND ${Python3_EXECUTABLE} -m unittest -v serve_default_model
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/integration)
  set_tests_properties(inference.serve.default_model PROPERTIES
    FIXTURES_REQUIRED default_model TIMEOUT 600
    ENVIRONMENT "COMMONS_BUILD=${CMAKE_BINARY_DIR};PYTHONDONTWRITEBYTECODE=1;COMMONS_SHARED_DATA=${COMMONS_SHARED_DATA}")
endif()

# Benchmark (not a test): the batched step alone, bench/serve-batch/bench_batch.
add_executable(bench_batch ${PROJECT_SOURCE_DIR}/bench/serve-batch/bench_batch.c)
target_link_libraries(bench_batch PRIVATE commons_batch)
