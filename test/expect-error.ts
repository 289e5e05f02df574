import { expect } from 'vitest';
import { FoveaError, type FoveaErrorCode } from '../lib/errors';

function checkFoveaError(caught: unknown, code: FoveaErrorCode, message?: RegExp): FoveaError {
  expect(caught, 'expected a FoveaError').toBeInstanceOf(FoveaError);
  const e = caught as FoveaError;
  expect(e.code).toBe(code);
  if (message) expect(e.message).toMatch(message);
  return e;
}

/** Runs fn, which must throw a FoveaError with `code` (and a message matching `message`); returns it. */
export function expectFoveaError(fn: () => unknown, code: FoveaErrorCode, message?: RegExp): FoveaError {
  try {
    fn();
  } catch (err) {
    return checkFoveaError(err, code, message);
  }
  return checkFoveaError(undefined, code, message);
}

/** Awaits `promise`, which must reject with a FoveaError with `code` (and a message matching `message`); returns it. */
export async function expectFoveaRejection(promise: Promise<unknown>, code: FoveaErrorCode, message?: RegExp): Promise<FoveaError> {
  try {
    await promise;
  } catch (err) {
    return checkFoveaError(err, code, message);
  }
  return checkFoveaError(undefined, code, message);
}
