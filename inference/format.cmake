# format.cmake: library commons_format — GGUF v3 reader/writer and tokenizers —
# and its tests. Included by inference/CMakeLists.txt. Needs only libc, libm
# and threads so it builds with COMMONS_INFERENCE_ONLY on a bare GPU box.
add_library(commons_format STATIC
  ${CMAKE_CURRENT_LIST_DIR}/gguf_types.c
)
target_include_directories(commons_format PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(commons_format PUBLIC Threads::Threads m)
