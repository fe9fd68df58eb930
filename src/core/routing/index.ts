// The routing decision: types, the checks list, policies, the candidate index and the pipeline.

export * from './admission.js';
export * from './candidate-index.js';
export * from './checks.js';
export * from './pipeline.js';
export * from './policy.js';
export * from './types.js';
