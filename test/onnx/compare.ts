/**
 * Output comparison with the ONNX backend test's tolerances: floats pass when
 * |got - want| <= atol + rtol * |want| (numpy.testing.assert_allclose with
 * rtol=1e-3, atol=1e-7, NaN equal to NaN); integer outputs must be identical.
 */
import type { OnnxTensor } from './loader';

export const RTOL = 1e-3;
export const ATOL = 1e-7;

export interface Mismatch {
  message: string;
  /** Largest finite |got - want| (floats with equal shapes only). */
  maxAbsError?: number;
}

function closeEnough(got: number, want: number): boolean {
  if (Number.isNaN(want)) return Number.isNaN(got);
  if (!Number.isFinite(want)) return got === want;
  return Math.abs(got - want) <= ATOL + RTOL * Math.abs(want);
}

function compareFloats(got: Float32Array, want: Float32Array): Mismatch | null {
  let bad = 0;
  let worst = -1;
  let worstExcess = -Infinity;
  let maxAbsError = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    if (err > maxAbsError) maxAbsError = err; // NaN errors show up as the worst value instead
    if (closeEnough(got[i]!, want[i]!)) continue;
    bad++;
    const excess = Number.isNaN(err) ? Infinity : err - RTOL * Math.abs(want[i]!);
    if (excess > worstExcess) [worst, worstExcess] = [i, excess];
  }
  if (bad === 0) return null;
  return {
    message:
      `${bad} of ${want.length} values beyond atol ${ATOL} + rtol ${RTOL}; max |got - want| = ${maxAbsError}; ` +
      `worst at flat index ${worst}: got ${got[worst]}, want ${want[worst]}`,
    maxAbsError,
  };
}

function compareExact(got: ArrayLike<bigint | number>, want: ArrayLike<bigint | number>): Mismatch | null {
  const g = Array.from(got, String);
  const w = Array.from(want, String);
  if (g.join() === w.join()) return null;
  return { message: `values differ: got [${g}], want [${w}]` };
}

/** null when `got` matches `want`, else what differs. */
export function compareOutput(got: OnnxTensor, want: OnnxTensor): Mismatch | null {
  if (got.dtype !== want.dtype) return { message: `dtype ${got.dtype}, want ${want.dtype}` };
  if (got.dims.join() !== want.dims.join()) return { message: `shape [${got.dims}], want [${want.dims}]` };
  if (got.dtype === 'float32' && want.dtype === 'float32') return compareFloats(got.data, want.data);
  return compareExact(got.data, want.data);
}
