# The one list of native sources. binding.gyp includes it; CMakeLists.txt
# parses it, so the two builds can never disagree about what they compile.
{
  'variables': {
    'fovea_core_sources': [
      'native/core/allocator.cc',
      'native/core/cpu_features.cc',
      'native/core/error.cc',
      'native/core/op_shapes.cc',
      'native/core/tensor.cc',
      'native/core/thread_pool.cc',
      'native/core/fold_batch_norm.cc',
      'native/core/backends.cc',
      'native/cpu/activation.cc',
      'native/cpu/backend.cc',
      'native/cpu/batchnorm.cc',
      'native/cpu/conv.cc',
      'native/cpu/elementwise.cc',
      'native/cpu/gemm.cc',
      'native/cpu/gemm_avx2.cc',
      'native/cpu/gemm_avx512.cc',
      'native/cpu/gemm_scalar.cc',
      'native/cpu/nms.cc',
      'native/cpu/pad.cc',
      'native/cpu/pool.cc',
      'native/cpu/resize.cc',
      'native/cpu/roi.cc',
      'native/io/json.cc',
      'native/io/safetensors.cc',
      'native/models/model_weights.cc',
      'native/models/deepmask.cc',
      'native/models/sharpmask.cc',
      'native/models/multipathnet.cc',
      'native/pipeline/masks.cc',
      'native/pipeline/pipeline.cc',
    ],
    'fovea_cuda_sources': [
      'native/cuda/device.cu',
    ],
    'fovea_addon_sources': [
      'native/addon/addon.cc',
      'native/addon/info.cc',
      'native/addon/model_binding.cc',
      'native/addon/ops_binding.cc',
      'native/addon/segmenter.cc',
    ],
    'fovea_test_sources': [
      'native/test/harness.cc',
      'native/test/test_core.cc',
      'native/test/test_conv_gemm.cc',
      'native/test/test_ops.cc',
      'native/test/test_safetensors.cc',
      'native/test/test_models_deepmask.cc',
      'native/test/fixtures.cc',
      'native/test/test_models_multipathnet.cc',
      'native/test/test_pipeline.cc',
    ],
    'fovea_bench_sources': [
      'native/bench/bench_main.cc',
    ],
    # libFuzzer targets (CMake -DFOVEA_FUZZ=ON, clang only): one executable
    # per file, fuzz_<name>.cc -> fovea_fuzz_<name>.
    'fovea_fuzz_sources': [
      'native/fuzz/fuzz_safetensors.cc',
      'native/fuzz/fuzz_json.cc',
      'native/fuzz/fuzz_config.cc',
    ],
  },
}
