const path = require("path");
const { getDefaultConfig, mergeConfig } = require("@react-native/metro-config");

// The engine is a linked folder (file:../engine): Metro watches it, and resolves its own dependencies
// (@huggingface/tokenizers, @huggingface/jinja) from ../engine/node_modules. It takes the engine's
// "react-native" entry, dist/src/index.js: the platform-neutral build, without onnxruntime-node.
const engine = path.resolve(__dirname, "../engine");
const defaults = getDefaultConfig(__dirname);

module.exports = mergeConfig(defaults, {
  watchFolders: [engine],
  resolver: {
    // @huggingface/tokenizers ships .mjs only
    sourceExts: [...new Set([...defaults.resolver.sourceExts, "mjs", "cjs"])],
  },
});
