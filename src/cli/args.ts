// Argument parsers shared by the client commands: each throws commander's InvalidArgumentError
// with the accepted range, so bad usage exits 2 with a message saying what to type.

import { InvalidArgumentError } from 'commander';
import { LEVELS } from '../core/model.js';
import type { Level } from '../gen/cpn/v1/types.js';

export function integer(min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (value.trim() === '' || !Number.isInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}, got "${value}"`);
    }
    return parsed;
  };
}

export function positiveNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0)
    throw new InvalidArgumentError(`expected a number > 0, got "${value}"`);
  return parsed;
}

/** A level name (CENTER, PROVINCE, EDGE, TERMINAL; any case, LEVEL_ prefix allowed), repeatable. */
export function levelArg(value: string, previous: Level[] = []): Level[] {
  const name = value.toUpperCase().replace(/^LEVEL_/, '');
  const index = (LEVELS as readonly string[]).indexOf(name);
  if (index < 0) throw new InvalidArgumentError(`expected one of ${LEVELS.join(', ')}, got "${value}"`);
  return [...previous, (index + 1) as Level];
}

export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];
