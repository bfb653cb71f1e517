/**
 * edgedec's engine, platform-neutral: see README.md. It needs a platform (platform.ts) to run: node.ts sets
 * Node's (the package's main entry); the React Native app passes its own.
 */
export { Bundle, BundleError, FORMAT, MANIFEST, readBundle, SCHEMA, versionRange } from "./bundle.js";
export type { FileEntry, LlamaConfig, Manifest, Segment, TokenizerInfo } from "./bundle.js";
export { ContextOverflowError, Engine, KVCache, Runner, Session, SessionBusyError } from "./engine.js";
export type { EngineOptions, FinishReason, GenerateOptions, Input, Response, Result } from "./engine.js";
export { getPlatform, setPlatform } from "./platform.js";
export type { FileInfo, Ort, Platform } from "./platform.js";
export { plain } from "./plain.js";
export { LOOKUP_DEFAULTS, lookup, propose } from "./lookup.js";
export type { LookupConfig, LookupStep, RowRunner } from "./lookup.js";
export { preloadPlatform } from "./preload.js";
export type { AsyncFiles } from "./preload.js";
export type { ForwardRunner, Step } from "./plain.js";
export { argmax, probabilities, Rng, Sampler, samplerConfig, top2 } from "./sampling.js";
export type { SamplerConfig } from "./sampling.js";
export { findStop, StreamDecoder, stopPrefixLen, TextStream, Tokenizer } from "./tokenizer.js";
export type { Message } from "./tokenizer.js";
