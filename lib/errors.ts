/**
 * Every error fovea raises is a FoveaError with a stable `code`. Native errors
 * arrive as plain Errors carrying `code`; toFoveaError() gives them this class.
 */
export type FoveaErrorCode =
  | 'ERR_INPUT'
  | 'ERR_OPTIONS'
  | 'ERR_WEIGHTS'
  | 'ERR_DEVICE'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_ABORTED'
  /** No native binary could be loaded for this platform. */
  | 'ERR_NATIVE_BINARY'
  /** A bug in fovea: please report it. */
  | 'ERR_INTERNAL';

const CODES: ReadonlySet<string> = new Set([
  'ERR_INPUT',
  'ERR_OPTIONS',
  'ERR_WEIGHTS',
  'ERR_DEVICE',
  'ERR_OUT_OF_MEMORY',
  'ERR_ABORTED',
  'ERR_NATIVE_BINARY',
  'ERR_INTERNAL',
]);

export class FoveaError extends Error {
  readonly code: FoveaErrorCode;

  constructor(code: FoveaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FoveaError';
    this.code = code;
  }
}

export function isFoveaErrorCode(code: unknown): code is FoveaErrorCode {
  return typeof code === 'string' && CODES.has(code);
}

/** Wraps anything thrown by the native layer into a FoveaError. */
export function toFoveaError(err: unknown): FoveaError {
  if (err instanceof FoveaError) return err;
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    return new FoveaError(isFoveaErrorCode(code) ? code : 'ERR_INTERNAL', err.message, { cause: err });
  }
  return new FoveaError('ERR_INTERNAL', String(err));
}
