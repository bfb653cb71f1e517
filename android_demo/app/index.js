// Hermes (React Native 0.81) has TextEncoder but no TextDecoder, which @huggingface/tokenizers' byte-level
// decoder needs: a UTF-8 one, installed before anything else loads.
import "@bacons/text-decoder/install";

import { AppRegistry } from "react-native";

import App from "./App";
import { name as appName } from "./app.json";

AppRegistry.registerComponent(appName, () => App);
