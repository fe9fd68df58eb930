// Reads YAML configuration files (topologies, scenarios) against a zod schema and reports every
// mistake as `file:line: field.path message, got value`, so that a user can go straight to it.

import { readFile } from 'node:fs/promises';
import { isNode, LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

export type PathSegment = string | number;

/** `a.b[2].c` */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? segment : `.${segment}`;
  }
  return out;
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** A parsed YAML document that can say on which line any path of it starts. */
export class YamlSource {
  private constructor(
    readonly file: string,
    readonly data: unknown,
    private readonly doc: ReturnType<typeof parseDocument>,
    private readonly lines: LineCounter,
  ) {}

  /** Parses `text`; throws ConfigError with line numbers on YAML syntax errors. */
  static parse(file: string, text: string): YamlSource {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true });
    if (doc.errors.length > 0) {
      throw new ConfigError(
        doc.errors.map((error) => {
          const line = error.linePos?.[0]?.line ?? 1;
          return `${file}:${line}: ${error.message.split('\n')[0]}`;
        }),
      );
    }
    return new YamlSource(file, doc.toJS({ maxAliasCount: 100 }), doc, lines);
  }

  static async load(file: string): Promise<YamlSource> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new ConfigError([`${file}: cannot read: ${(error as Error).message}`]);
    }
    return YamlSource.parse(file, text);
  }

  /** Line (1-based) where `path` starts, or where its nearest existing parent starts. */
  lineOf(path: readonly PathSegment[]): number {
    for (let length = path.length; length >= 0; length -= 1) {
      const node = this.doc.getIn(path.slice(0, length), true);
      if (isNode(node) && node.range) return this.lines.linePos(node.range[0]).line;
    }
    return 1;
  }

  /** `file:line: path message` */
  problem(path: readonly PathSegment[], message: string): string {
    const where = formatPath(path);
    return `${this.file}:${this.lineOf(path)}: ${where ? `${where} ` : ''}${message}`;
  }

  /** Validates the document; throws ConfigError listing every problem with its line. */
  validate<T extends z.ZodType>(schema: T): z.output<T> {
    const result = schema.safeParse(this.data, { reportInput: true });
    if (result.success) return result.data;
    throw new ConfigError(
      result.error.issues.flatMap((issue) => {
        const path = issue.path.filter((segment): segment is PathSegment => typeof segment !== 'symbol');
        if (issue.code === 'unrecognized_keys') {
          return issue.keys.map((key) => this.problem([...path, key], 'is not a known key here (misspelt?)'));
        }
        if (issue.code === 'invalid_key') {
          // The key's own rule says what is wrong with it (zod keeps it inside).
          const why = issue.issues.map((inner) => inner.message).join('; ') || issue.message;
          return this.problem(path, `${why}, got ${describeValue(issue.input)}`);
        }
        if (issue.code === 'invalid_type' && issue.input === undefined) {
          return this.problem(path, `is required (${issue.expected})`);
        }
        return this.problem(path, `${issue.message}, got ${describeValue(issue.input)}`);
      }),
    );
  }
}
