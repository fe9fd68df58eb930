// The routing decision: types, the checks list, policies, the candidate index, the pipeline, and
// the session rule that keeps a moving client's placement.

export * from './admission.js';
export * from './candidate-index.js';
export * from './checks.js';
export * from './pipeline.js';
export * from './policy.js';
export * from './sessions.js';
export * from './types.js';
