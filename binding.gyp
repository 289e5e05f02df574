# node-gyp fallback: the CPU backend for machines without CMake. This is what
# node-gyp-build runs when no prebuilt binary matches. The source list comes
# from native/sources.gypi, shared with CMakeLists.txt.
{
  'includes': ['native/sources.gypi'],
  'targets': [
    {
      'target_name': 'fovea',
      'sources': ['<@(fovea_core_sources)', '<@(fovea_addon_sources)'],
      'include_dirs': ["<!@(node -p \"require('node-addon-api').include\")", 'native'],
      'defines': ['NAPI_VERSION=8', 'NAPI_CPP_EXCEPTIONS', 'NODE_ADDON_API_DISABLE_DEPRECATED'],
      'cflags!': ['-fno-exceptions'],
      'cflags_cc!': ['-fno-exceptions', '-fno-rtti', '-std=gnu++1y', '-std=gnu++17'],
      'cflags_cc': ['-std=c++17', '-O3', '-fexceptions', '-frtti', '-Wall', '-Wextra'],
      'ldflags': ['-pthread'],
    },
  ],
}
