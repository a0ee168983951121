# format.cmake: library commons_format — GGUF v3 reader/writer and tokenizers —
# and its tests. Included by inference/CMakeLists.txt. Needs only libc, libm
# and threads so it builds with COMMONS_INFERENCE_ONLY on a bare GPU box.
add_library(commons_format STATIC
  ${CMAKE_CURRENT_LIST_DIR}/gguf_types.c
  ${CMAKE_CURRENT_LIST_DIR}/gguf.c
  ${CMAKE_CURRENT_LIST_DIR}/gguf_get.c
  ${CMAKE_CURRENT_LIST_DIR}/gguf_index.c
  ${CMAKE_CURRENT_LIST_DIR}/gguf_writer.c
  ${CMAKE_CURRENT_LIST_DIR}/unicode.c
  ${CMAKE_CURRENT_LIST_DIR}/unicode_data.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_load.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_spm.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bpe.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_pre.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_heap.c
)
target_include_directories(commons_format PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(commons_format PUBLIC Threads::Threads m)

if(CHECK_FOUND)
  add_executable(test_gguf ${CMAKE_CURRENT_LIST_DIR}/tests/test_gguf.c)
  target_link_libraries(test_gguf PRIVATE commons_format PkgConfig::CHECK)
  add_test(NAME inference.gguf COMMAND test_gguf ${COMMONS_SHARED_DATA}/vocab)
endif()
if(CHECK_FOUND)
  add_executable(test_tokenizer ${CMAKE_CURRENT_LIST_DIR}/tests/test_tokenizer.c)
  target_link_libraries(test_tokenizer PRIVATE commons_format PkgConfig::CHECK)
  add_test(NAME inference.tokenizer COMMAND test_tokenizer ${COMMONS_SHARED_DATA}/vocab
           ${CMAKE_CURRENT_LIST_DIR}/tests/fixtures)
  # The default model comes from scripts/get-model; without it the test reports "skipped".
  set(COMMONS_FORMAT_GEMMA "${CMAKE_CURRENT_LIST_DIR}/../models/gemma-3-270m-q4_k_m.gguf" CACHE FILEPATH
      "Gemma 3 270M GGUF whose vocabulary test_tokenizer --gemma checks")
  add_test(NAME inference.tokenizer_gemma COMMAND test_tokenizer --gemma ${COMMONS_FORMAT_GEMMA}
           ${CMAKE_CURRENT_LIST_DIR}/tests/fixtures)
  set_tests_properties(inference.tokenizer_gemma PROPERTIES SKIP_RETURN_CODE 77)
  # More vocabularies (Llama 3.2, Qwen) made by scripts/get-extra-vocabs BUILD_DIR; skipped without.
  add_test(NAME inference.tokenizer_extra COMMAND test_tokenizer --extra ${CMAKE_BINARY_DIR}/vocab-extra)
  set_tests_properties(inference.tokenizer_extra PROPERTIES SKIP_RETURN_CODE 77)
endif()
