# quotas/tests: Check unit tests, one executable per area, each registered with ctest.
foreach(t policy_load policy_errors policy_fuzz fairshare priority_limits plan sim)
  add_executable(test_quota_${t} ${CMAKE_CURRENT_LIST_DIR}/test_${t}.c)
  target_link_libraries(test_quota_${t} PRIVATE commons_quotas PkgConfig::CHECK)
  target_compile_definitions(test_quota_${t} PRIVATE
    QUOTA_TEST_DATA="${CMAKE_CURRENT_LIST_DIR}/data"
    QUOTA_CONFIGS="${CMAKE_CURRENT_LIST_DIR}/../../configs"
    COMMONS_SHARED_DATA="${COMMONS_SHARED_DATA}")
  add_test(NAME quota_${t} COMMAND test_quota_${t})
endforeach()
