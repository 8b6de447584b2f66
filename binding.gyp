{
  # node-gyp entry point (`node-gyp rebuild`, or tools that look for binding.gyp): the real build is
  # CMake (CMakeLists.txt, driven by cmake-js), so this target only delegates to it.
  "targets": [
    {
      "target_name": "rrr_native",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/rrr_native.node"],
          "action": ["node", "scripts/install.mjs"]
        }
      ]
    }
  ]
}
