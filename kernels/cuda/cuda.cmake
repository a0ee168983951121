# kernels/cuda/cuda.cmake: the CUDA backend (issue 6), included by
# kernels/CMakeLists.txt when COMMONS_HAVE_CUDA. The .cu files compile into
# an object library for sm_90 machine code plus compute_90 PTX (newer GPUs
# JIT the PTX) and join commons_kernels, which then links the CUDA runtime
# and cuBLAS and defines KERN_HAVE_CUDA for api.c and every user.
find_package(CUDAToolkit REQUIRED)
set(COMMONS_CUDA_ARCHITECTURES "90-real;90-virtual" CACHE STRING
    "GPU targets of the CUDA backend (CMake CUDA_ARCHITECTURES syntax)")
add_library(commons_kernels_cuda OBJECT
  ${CMAKE_CURRENT_LIST_DIR}/cuda_backend.cu
  ${CMAKE_CURRENT_LIST_DIR}/cuda_matmul.cu
  ${CMAKE_CURRENT_LIST_DIR}/cuda_mmq.cu
  ${CMAKE_CURRENT_LIST_DIR}/cuda_ops.cu
  ${CMAKE_CURRENT_LIST_DIR}/cuda_attention.cu
  ${CMAKE_CURRENT_LIST_DIR}/cuda_sample.cu
)
# The top level's -Wall -Wextra are gcc flags nvcc does not take as such:
# clear the inherited options and pass them to the host compiler.
set_property(TARGET commons_kernels_cuda PROPERTY COMPILE_OPTIONS "")
target_compile_options(commons_kernels_cuda PRIVATE -Xcompiler=-Wall,-Wextra,-Wno-unknown-pragmas --expt-relaxed-constexpr)
# (device code is optimized by ptxas at -O3 whatever the build type)
target_compile_definitions(commons_kernels_cuda PRIVATE _GNU_SOURCE)
set_target_properties(commons_kernels_cuda PROPERTIES
  CUDA_ARCHITECTURES "${COMMONS_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON)
target_include_directories(commons_kernels_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(commons_kernels_cuda PRIVATE CUDA::cudart CUDA::cublas)

target_sources(commons_kernels PRIVATE $<TARGET_OBJECTS:commons_kernels_cuda>)
target_include_directories(commons_kernels PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_compile_definitions(commons_kernels PUBLIC KERN_HAVE_CUDA)
target_link_libraries(commons_kernels PUBLIC CUDA::cudart CUDA::cublas)

# Runs without a GPU: the backend must refuse cleanly (tests/gpu needs one).
add_executable(test_kernels_cuda_nodev ${CMAKE_CURRENT_LIST_DIR}/test_cuda_nodev.c)
target_link_libraries(test_kernels_cuda_nodev PRIVATE commons_kernels)
add_test(NAME kernels_cuda_nodevice COMMAND test_kernels_cuda_nodev)

# Runs on the host, no GPU: the device dequantization code against the CPU's.
add_executable(test_kernels_cuda_dequant ${CMAKE_CURRENT_LIST_DIR}/test_cuda_dequant.cu)
set_property(TARGET test_kernels_cuda_dequant PROPERTY COMPILE_OPTIONS "")
target_compile_options(test_kernels_cuda_dequant PRIVATE -Xcompiler=-Wall,-Wextra,-Wno-unknown-pragmas --expt-relaxed-constexpr)
set_target_properties(test_kernels_cuda_dequant PROPERTIES CUDA_ARCHITECTURES "${COMMONS_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
target_include_directories(test_kernels_cuda_dequant PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(test_kernels_cuda_dequant PRIVATE commons_kernels m)
add_test(NAME kernels_cuda_dequant_host COMMAND test_kernels_cuda_dequant)

# Runs on the host, no GPU: cuda_mmq.cu's blocks emulated thread by thread.
add_executable(test_kernels_cuda_mmq ${CMAKE_CURRENT_LIST_DIR}/test_cuda_mmq_host.cu)
set_property(TARGET test_kernels_cuda_mmq PROPERTY COMPILE_OPTIONS "")
# (the block's phases store through uint4 pointers into byte and bf16 buffers, as
# the device does: on the host that needs gcc's aliasing assumptions off)
target_compile_options(test_kernels_cuda_mmq PRIVATE -Xcompiler=-Wall,-Wextra,-Wno-unknown-pragmas,-fno-strict-aliasing
  --expt-relaxed-constexpr)
set_target_properties(test_kernels_cuda_mmq PROPERTIES CUDA_ARCHITECTURES "${COMMONS_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
target_include_directories(test_kernels_cuda_mmq PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(test_kernels_cuda_mmq PRIVATE commons_kernels m)
add_test(NAME kernels_cuda_mmq_host COMMAND test_kernels_cuda_mmq)

# GPU check programs and bench/infer-gpu (built, never run by ctest)
include(${PROJECT_SOURCE_DIR}/tests/gpu/gpu.cmake)
