// React Native sets up a global `performance` with now() (react-native/Libraries/Core/setUpPerformance.js),
// but its type definitions do not declare it; the engine times prefill and decoding with it.
declare var performance: { now(): number };
