// Who is calling: the identity a credential (API key or client certificate) stands for, and the
// roles that decide which methods it may call. The tenant of a client and the node of an agent
// come from the credential, never from a request body.

export const ROLES = ['operator', 'agent', 'client', 'planner'] as const;
export type Role = (typeof ROLES)[number];

/** What each role is for, in the words `--help` and PERMISSION_DENIED messages use. */
export const ROLE_WORDS: Readonly<Record<Role, string>> = {
  operator: 'operator (every method)',
  agent:
    "agent (its own node's registration, status, latency, drain and deregistration, and the usage of requests it served)",
  client: "client (Route, Release of its tenant's reservations, its own usage)",
  planner: 'planner (read-only: nodes, pricing, usage)',
};

export type Identity =
  | { readonly role: 'operator'; readonly subject: string }
  | { readonly role: 'agent'; readonly subject: string; readonly nodeId: string }
  | { readonly role: 'client'; readonly subject: string; readonly tenant: string }
  | { readonly role: 'planner'; readonly subject: string };

/** The identity of every caller when authentication is off (`--auth none`, loopback only). */
export const ANONYMOUS_OPERATOR: Identity = { role: 'operator', subject: 'anonymous (auth off)' };
