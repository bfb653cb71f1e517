/** edgedec's engine for Node (and, later, React Native): see README.md. */
export { Bundle, BundleError, readBundle, versionRange, SCHEMA_PATH } from "./bundle.js";
export type { LlamaConfig, Manifest, Segment, TokenizerInfo } from "./bundle.js";
export { ContextOverflowError, Engine, KVCache, Runner, Session, SessionBusyError } from "./engine.js";
export type { EngineOptions, FinishReason, GenerateOptions, Input, Response, Result } from "./engine.js";
export { plain } from "./plain.js";
export type { Step } from "./plain.js";
export { argmax, probabilities, Rng, Sampler, samplerConfig, top2 } from "./sampling.js";
export type { SamplerConfig } from "./sampling.js";
export { findStop, StreamDecoder, stopPrefixLen, TextStream, Tokenizer } from "./tokenizer.js";
export type { Message } from "./tokenizer.js";
