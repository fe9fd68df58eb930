// Admission: request-level rules that run before any node is looked at — where quota and
// throttling go. A rule returns a Refusal to turn the request away, or undefined to let it pass;
// the rules run in order and the first refusal wins.

import type { Refusal, RouteRequest } from './types.js';

export type AdmissionRule = (request: RouteRequest, nowMs: number) => Refusal | undefined;
