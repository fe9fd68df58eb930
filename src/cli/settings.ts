// Settings tables for long-running commands (`cpn serve`, `cpn agent`): each setting is one entry
// with its kind (range or choices), default and help, and the table derives the commander options,
// the CPN_* variables and the `--config` YAML schema from it.
//
// Naming: the key `etcdTimeoutMs` is the flag `--etcd-timeout-ms`, the variable
// `<PREFIX>ETCD_TIMEOUT_MS` and the YAML key `etcd_timeout_ms`. Precedence: flag, variable, file,
// default.

import { type Command, Option } from 'commander';
import { z } from 'zod';
import { YamlSource } from '../ops/yaml-config.js';
import { integer } from './args.js';

export type Kind =
  | { readonly type: 'int'; readonly min: number; readonly max: number }
  | { readonly type: 'choice'; readonly choices: readonly string[] }
  | { readonly type: 'text' }
  /** A comma-separated list on the command line; a string or a list of strings in YAML. */
  | { readonly type: 'list' }
  | { readonly type: 'switch' };

export interface Setting {
  readonly kind: Kind;
  /** Placeholder in `--help`, e.g. `<ms>`; switches have none. */
  readonly arg?: string;
  readonly help: string;
  readonly default?: number | string | boolean;
  /** Flag-only (not a YAML key), e.g. the path of the YAML file itself. */
  readonly notInFile?: boolean;
}

export const int = (min: number, max: number) => ({ type: 'int', min, max }) as const;
export const choice = <const C extends readonly string[]>(...choices: C) =>
  ({ type: 'choice', choices }) as const;
export const text = { type: 'text' } as const;
export const list = { type: 'list' } as const;

type ValueOf<S> = S extends { kind: { type: 'int' } }
  ? number
  : S extends { kind: { type: 'switch' } }
    ? boolean
    : S extends { kind: { type: 'choice'; choices: readonly (infer C)[] } }
      ? C
      : string;

/** A table's settings as a command reads them, defaults applied. */
export type SettingValues<T extends Record<string, Setting>> = {
  readonly [K in keyof T]: T[K] extends { default: unknown } ? ValueOf<T[K]> : ValueOf<T[K]> | undefined;
};

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function fileSchema(kind: Kind): z.ZodType {
  switch (kind.type) {
    case 'int':
      return z.number().int().min(kind.min).max(kind.max);
    case 'choice':
      return z.enum(kind.choices as [string, ...string[]]);
    case 'text':
      return z.string().min(1);
    case 'list':
      return z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);
    case 'switch':
      return z.boolean();
  }
}

export class SettingsTable<T extends Record<string, Setting>> {
  private readonly entries: [keyof T & string, Setting][];
  /** The `--config` file: keys are the settings in snake_case, each with the flag's range. */
  readonly schema: z.ZodObject;

  constructor(
    readonly table: T,
    /** Variable prefix, e.g. `CPN_` or `CPN_AGENT_`. */
    private readonly envPrefix: string,
  ) {
    this.entries = Object.entries(table) as [keyof T & string, Setting][];
    this.schema = z.strictObject(
      Object.fromEntries(
        this.entries
          .filter(([, setting]) => !setting.notInFile)
          .map(([key, setting]) => [this.fileKeyOf(key), fileSchema(setting.kind).optional()]),
      ),
    );
  }

  flagOf(key: keyof T & string): string {
    return `--${kebab(key)}`;
  }

  envOf(key: keyof T & string): string {
    return `${this.envPrefix}${snake(key).toUpperCase()}`;
  }

  fileKeyOf(key: keyof T & string): string {
    return snake(key);
  }

  /** The commander options, one per setting. */
  options(): Option[] {
    return this.entries.map(([key, setting]) => {
      const flag = setting.arg === undefined ? this.flagOf(key) : `${this.flagOf(key)} ${setting.arg}`;
      const option = new Option(flag, setting.help).env(this.envOf(key));
      if (setting.default !== undefined) option.default(setting.default);
      const kind = setting.kind;
      if (kind.type === 'int') option.argParser(integer(kind.min, kind.max));
      if (kind.type === 'choice') option.choices(kind.choices);
      // A repeated list flag adds to the list (`--probe a --probe b` is `--probe a,b`).
      if (kind.type === 'list')
        option.argParser((value: string, previous: unknown) =>
          previous === undefined || previous === setting.default ? value : `${previous},${value}`,
        );
      return option;
    });
  }

  /**
   * Fills every setting still at its default (not given as a flag or variable) from the `--config`
   * file, then returns all of them. A list from the file is joined with commas, as on the command line.
   */
  async resolve(command: Command): Promise<SettingValues<T>> {
    const file = command.getOptionValue('config') as string | undefined;
    if (file !== undefined) {
      const config = (await YamlSource.load(file)).validate(this.schema) as Record<string, unknown>;
      for (const [key] of this.entries) {
        const value = config[this.fileKeyOf(key)];
        if (value === undefined) continue;
        const source = command.getOptionValueSource(key);
        if (source === 'cli' || source === 'env') continue;
        command.setOptionValueWithSource(key, Array.isArray(value) ? value.join(',') : value, 'config');
      }
    }
    return command.opts() as SettingValues<T>;
  }

  /** Where each setting came from (cli, env, config, default), for the start-up log. */
  sources(command: Command): Record<string, { value: unknown; from: string }> {
    return Object.fromEntries(
      this.entries.map(([key]) => [
        key,
        { value: command.getOptionValue(key), from: command.getOptionValueSource(key) ?? 'unset' },
      ]),
    );
  }
}
