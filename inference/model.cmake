# model.cmake: library commons_infer (model graphs, KV cache, sampler, chat templates),
# the mains commons-run and commons-mkmodel, and their tests. Included by
# inference/CMakeLists.txt. Needs only commons_format and commons_kernels, so it builds
# with COMMONS_INFERENCE_ONLY on a bare GPU box.
add_library(commons_infer STATIC
  ${CMAKE_CURRENT_LIST_DIR}/model_load.c
  ${CMAKE_CURRENT_LIST_DIR}/model_layer.c
  ${CMAKE_CURRENT_LIST_DIR}/model_eval.c
  ${CMAKE_CURRENT_LIST_DIR}/kv_cache.c
  ${CMAKE_CURRENT_LIST_DIR}/sampler.c
  ${CMAKE_CURRENT_LIST_DIR}/chat.c
)
target_include_directories(commons_infer PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(commons_infer PUBLIC commons_format commons_kernels m)
if(COMMONS_HAVE_CUDA)  # the CUDA-graph decode of infer_eval (gpu's file)
  target_sources(commons_infer PRIVATE ${CMAKE_CURRENT_LIST_DIR}/model_gpu.c)
endif()

add_executable(commons-run ${CMAKE_CURRENT_LIST_DIR}/commons-run.c)
target_link_libraries(commons-run PRIVATE commons_infer)

add_executable(commons-mkmodel ${CMAKE_CURRENT_LIST_DIR}/mkmodel.c)
target_link_libraries(commons-mkmodel PRIVATE commons_format commons_kernels m)

# ---- tests ----
add_executable(test_logits ${CMAKE_CURRENT_LIST_DIR}/tests/test_logits.c
                           ${CMAKE_CURRENT_LIST_DIR}/tests/fixture.c)
target_link_libraries(test_logits PRIVATE commons_infer)

add_executable(test_model_errors ${CMAKE_CURRENT_LIST_DIR}/tests/test_model_errors.c)
target_link_libraries(test_model_errors PRIVATE commons_infer)
add_test(NAME inference.model.bad_files
         COMMAND test_model_errors ${CMAKE_CURRENT_BINARY_DIR})

add_executable(test_run_tokenize ${CMAKE_CURRENT_LIST_DIR}/tests/test_run_tokenize.c)
foreach(vocab llama-spm gpt-2 phi-3)
  add_test(NAME inference.run.tokenize.${vocab}
           COMMAND test_run_tokenize $<TARGET_FILE:commons-run>
                   ${COMMONS_SHARED_DATA}/vocab/ggml-vocab-${vocab}.gguf)
endforeach()

# Logits against the numpy reference (tests/ref/README.md). Synthetic models are
# regenerated from tests/ref/synthetic.txt by a setup test, then compared.
set(_ref ${CMAKE_CURRENT_LIST_DIR}/tests/ref)
set(_synth ${CMAKE_CURRENT_BINARY_DIR}/synthetic)
file(MAKE_DIRECTORY ${_synth})
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_ref}/synthetic.txt)
file(STRINGS ${_ref}/synthetic.txt _lines REGEX "^[^#]")
foreach(_line IN LISTS _lines)
  string(REPLACE "|" ";" _f "${_line}")
  list(GET _f 0 _name)
  list(GET _f 1 _args)
  list(GET _f 2 _atol)
  list(GET _f 3 _rtol)
  list(GET _f 4 _margin)
  foreach(_v _name _args _atol _rtol _margin)
    string(STRIP "${${_v}}" ${_v})
  endforeach()
  separate_arguments(_args UNIX_COMMAND "${_args}")
  add_test(NAME inference.mkmodel.${_name}
           COMMAND commons-mkmodel --vocab ${COMMONS_SHARED_DATA}/vocab/ggml-vocab-llama-spm.gguf
                   --out ${_synth}/${_name}.gguf ${_args})
  set_tests_properties(inference.mkmodel.${_name} PROPERTIES FIXTURES_SETUP synth_${_name})
  add_test(NAME inference.logits.${_name}
           COMMAND test_logits --fixture ${_ref}/${_name}.txt --model ${_synth}/${_name}.gguf
                   --atol ${_atol} --rtol ${_rtol} --margin ${_margin})
  set_tests_properties(inference.logits.${_name} PROPERTIES FIXTURES_REQUIRED synth_${_name})
endforeach()

# F16 KV cache: keys/values rounded to f16 (relative 5e-4) move logits by ~0.01.
add_test(NAME inference.logits.gemma-f32-kvf16
         COMMAND test_logits --fixture ${_ref}/gemma-f32.txt --model ${_synth}/gemma-f32.gguf
                 --atol 0.05 --rtol 0 --margin 0.1 --kv f16)
set_tests_properties(inference.logits.gemma-f32-kvf16 PROPERTIES FIXTURES_REQUIRED synth_gemma-f32)

# The default model (Gemma 3 270M Q4_K_M) comes through scripts/get-model; if that
# fails (no network), the real-model tests fail as "required fixture failed", never pass.
set(_default_model ${CMAKE_SOURCE_DIR}/models/gemma-3-270m-q4_k_m.gguf)
add_test(NAME inference.get_model COMMAND ${CMAKE_SOURCE_DIR}/scripts/get-model ${CMAKE_BINARY_DIR})
set_tests_properties(inference.get_model PROPERTIES FIXTURES_SETUP default_model TIMEOUT 900)
foreach(_name gemma3-days gemma3-months)
  add_test(NAME inference.logits.${_name}
           COMMAND test_logits --fixture ${_ref}/${_name}.txt --model ${_default_model}
                   --atol 1.5 --rtol 0 --margin 1.0)
  set_tests_properties(inference.logits.${_name} PROPERTIES FIXTURES_REQUIRED default_model)
endforeach()
# 642 tokens: past the 512-token sliding window of the local layers. Far-tail logits
# drift more over a long context (up to 2.2); see tests/ref/README.md.
add_test(NAME inference.logits.gemma3-count150
         COMMAND test_logits --fixture ${_ref}/gemma3-count150.txt --model ${_default_model}
                 --atol 2.5 --rtol 0 --margin 1.0)
set_tests_properties(inference.logits.gemma3-count150 PROPERTIES FIXTURES_REQUIRED default_model)
add_test(NAME inference.logits.gemma3-days-kvf16
         COMMAND test_logits --fixture ${_ref}/gemma3-days.txt --model ${_default_model}
                 --atol 1.5 --rtol 0 --margin 1.0 --kv f16)
set_tests_properties(inference.logits.gemma3-days-kvf16 PROPERTIES FIXTURES_REQUIRED default_model)

add_executable(test_sampler ${CMAKE_CURRENT_LIST_DIR}/tests/test_sampler.c)
target_link_libraries(test_sampler PRIVATE commons_infer)
add_test(NAME inference.sampler COMMAND test_sampler ${CMAKE_CURRENT_BINARY_DIR})

# commons-run end to end (tests/run_cli.sh): flags, seeds, stop strings on a synthetic
# model; the chat loop on the default model.
foreach(_case usage seed stop)
  add_test(NAME inference.run.${_case}
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/tests/run_cli.sh $<TARGET_FILE:commons-run>
                   ${_case} ${_synth}/llama-tied-f16.gguf
                   ${COMMONS_SHARED_DATA}/vocab/ggml-vocab-llama-spm.gguf)
  set_tests_properties(inference.run.${_case} PROPERTIES FIXTURES_REQUIRED synth_llama-tied-f16)
endforeach()
add_test(NAME inference.run.chat
         COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/tests/run_cli.sh $<TARGET_FILE:commons-run>
                 chat ${_default_model})
set_tests_properties(inference.run.chat PROPERTIES FIXTURES_REQUIRED default_model)
