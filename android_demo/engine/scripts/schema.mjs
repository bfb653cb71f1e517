/**
 * Writes src/schema.ts (git-ignored; `npm run build` runs this first) from edgedec/bundle.schema.json, the
 * one source of the bundle schema: the schema itself and its validator, compiled by ajv here, at build time.
 *
 * So at run time the engine reads no schema file (a phone has no edgedec checkout) and generates no code:
 * ajv compiles a schema with `new Function`, and has open reports of failing under React Native's Hermes
 * (ajv issues 1923, 1945). The validator is the one ajv would compile at run time, with the same errors.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import Ajv2020 from "ajv/dist/2020.js";
import standalone from "ajv/dist/standalone/index.js";

const SOURCE = "edgedec/bundle.schema.json";      // from the repository root
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const schema = JSON.parse(readFileSync(join(root, "..", "..", SOURCE), "utf8"));

const ajv = new Ajv2020.default({ allErrors: false, strict: false, code: { source: true, esm: true } });
const validator = standalone.default(ajv, ajv.compile(schema));

writeFileSync(join(root, "src", "schema.ts"), [
  `// Generated from ${SOURCE} by scripts/schema.mjs (npm run build); do not edit.`,
  "// @ts-nocheck",
  `export const SCHEMA_FILE = ${JSON.stringify(SOURCE)};`,
  `export const schema = ${JSON.stringify(schema)};`,
  validator.replace(/^"use strict";/, ""),      // exports validate (and default): ajv's standalone code
  "",
].join("\n"));
