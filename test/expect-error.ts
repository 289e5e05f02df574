import { expect } from 'vitest';
import { FoveaError, type FoveaErrorCode } from '../lib/errors';

/** Runs fn, which must throw a FoveaError with `code` (and a message matching `message`); returns it. */
export function expectFoveaError(fn: () => unknown, code: FoveaErrorCode, message?: RegExp): FoveaError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a FoveaError').toBeInstanceOf(FoveaError);
  const e = caught as FoveaError;
  expect(e.code).toBe(code);
  if (message) expect(e.message).toMatch(message);
  return e;
}

/** Awaits `promise`, which must reject with a FoveaError with `code` (and a message matching `message`); returns it. */
export async function expectFoveaRejection(promise: Promise<unknown>, code: FoveaErrorCode, message?: RegExp): Promise<FoveaError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a FoveaError').toBeInstanceOf(FoveaError);
  const e = caught as FoveaError;
  expect(e.code).toBe(code);
  if (message) expect(e.message).toMatch(message);
  return e;
}
