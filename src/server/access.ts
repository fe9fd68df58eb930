// Who may call what. Every RPC names its method here; the gate authenticates the caller and checks
// the role before the handler runs. Scope within a role — an agent speaks only for its node, a
// client only for its tenant — is checked by the handler with `ownNode` / `tenantFor`, once the
// request's fields are validated.

import type { PeerCertificate } from 'node:tls';
import type { Metadata } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { Authenticator, AuthFailure } from '../auth/authenticator.js';
import type { Identity, Role } from '../auth/identity.js';
import { ApiError } from './errors.js';

const EVERYONE_READS: readonly Role[] = ['operator', 'planner'];

/** The roles allowed to call each method (operators may call every one). */
export const METHOD_ROLES = {
  // Registry
  RegisterNode: ['operator', 'agent'],
  ReportStatus: ['operator', 'agent'],
  Heartbeat: ['operator', 'agent'],
  ReportLatency: ['operator', 'agent'],
  // An agent for its own node only (ownNode), and it may drain but not lift a drain.
  DeregisterNode: ['operator', 'agent'],
  DrainNode: ['operator', 'agent'],
  GetNode: EVERYONE_READS,
  ListNodes: EVERYONE_READS,
  GetStoreStatus: EVERYONE_READS,
  SchedulePricing: ['operator'],
  CancelPricing: ['operator'],
  GetPricing: ['operator', 'planner', 'client'],
  // Scheduler
  Route: ['operator', 'client'],
  Release: ['operator', 'client', 'agent'],
  // A client's own tenant's sessions only (tenantFor); another tenant's are NOT_FOUND.
  OpenSession: ['operator', 'client'],
  UpdateSession: ['operator', 'client'],
  CloseSession: ['operator', 'client'],
  WatchSession: ['operator', 'client'],
  // Accounts
  CreateTenant: ['operator'],
  GetTenant: ['operator', 'client'],
  ListTenants: ['operator'],
  CreateApiKey: ['operator'],
  RevokeApiKey: ['operator'],
  ListApiKeys: ['operator'],
  SetPackage: ['operator'],
  GetUsage: ['operator', 'planner', 'client'],
  WhoAmI: ['operator', 'planner', 'client', 'agent'],
} as const satisfies Record<string, readonly Role[]>;

export type MethodName = keyof typeof METHOD_ROLES;

function describe(identity: Identity): string {
  switch (identity.role) {
    case 'agent':
      return `${identity.subject} is an agent key for node ${identity.nodeId}`;
    case 'client':
      return `${identity.subject} is a client key of tenant ${identity.tenant}`;
    default:
      return `${identity.subject} has role ${identity.role}`;
  }
}

export interface GateObserver {
  /** A call refused: not authenticated (why), or authenticated without the role ('forbidden'). */
  authFailed(reason: AuthFailure | 'forbidden'): void;
}

/** Authenticates each call and checks its method's roles; throws ApiError otherwise. */
export class CallGate {
  constructor(
    private readonly authenticator: Authenticator,
    private readonly observer?: GateObserver,
  ) {}

  /** The caller, synchronously when its credential was seen before. */
  admit(
    method: MethodName,
    metadata: Metadata,
    certificate: () => PeerCertificate | undefined,
  ): Identity | Promise<Identity> {
    const header = metadata.get('authorization')[0];
    const outcome = this.authenticator.authenticate(
      typeof header === 'string' ? header : undefined,
      typeof header === 'string' ? undefined : certificate(),
    );
    return outcome instanceof Promise
      ? outcome.then((settled) => this.check(method, settled))
      : this.check(method, outcome);
  }

  private check(method: MethodName, outcome: Awaited<ReturnType<Authenticator['authenticate']>>): Identity {
    if (!outcome.ok) {
      this.observer?.authFailed(outcome.failure);
      throw new ApiError(
        outcome.failure === 'busy' ? status.UNAVAILABLE : status.UNAUTHENTICATED,
        `${method}: ${outcome.message}`,
      );
    }
    const roles: readonly Role[] = METHOD_ROLES[method];
    if (!roles.includes(outcome.identity.role)) {
      this.observer?.authFailed('forbidden');
      throw new ApiError(
        status.PERMISSION_DENIED,
        `${method} needs role ${roles.join(' or ')}; ${describe(outcome.identity)}`,
      );
    }
    return outcome.identity;
  }
}

/** An agent may only speak for its own node; others (operators) for any. */
export function ownNode(caller: Identity, method: MethodName, nodeId: string): void {
  if (caller.role === 'agent' && caller.nodeId !== nodeId) {
    throw new ApiError(
      status.PERMISSION_DENIED,
      `${method}: ${describe(caller)} and may not speak for node ${nodeId}`,
    );
  }
}

/**
 * The tenant a call acts for: a client's own (the request's `tenant` must be empty or the same);
 * for an operator, the request's.
 */
export function tenantFor(caller: Identity, method: MethodName, requested: string): string {
  if (caller.role !== 'client') return requested;
  if (requested !== '' && requested !== caller.tenant) {
    throw new ApiError(
      status.PERMISSION_DENIED,
      `${method}: ${describe(caller)} and may not act for tenant ${requested} (leave tenant empty)`,
    );
  }
  return caller.tenant;
}
