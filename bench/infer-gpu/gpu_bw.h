/* gpu_bw.h: device-to-device copy bandwidth (bytes read + bytes written per
 * second of cudaMemcpy between two 512 MiB buffers), the memory-bandwidth
 * ceiling the infer-gpu benchmarks compare against. 0 on failure. */
#ifndef COMMONS_GPU_BW_H
#define COMMONS_GPU_BW_H

#include <cuda_runtime.h>

static inline double gpu_copy_bandwidth(void)
{
    size_t bytes = (size_t)512 << 20;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) || cudaMalloc(&b, bytes)) {
        cudaFree(a);
        return 0;
    }
    cudaMemset(a, 1, bytes);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice); /* warm-up */
    const int iters = 20;
    cudaEventRecord(e0, 0);
    for (int i = 0; i < iters; i++) cudaMemcpy(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1, 0);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b);
    return ms > 0 ? 2.0 * bytes * iters / (ms * 1e-3) : 0;
}

#endif
