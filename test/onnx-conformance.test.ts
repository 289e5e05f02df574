/**
 * ONNX conformance: runs the ONNX backend node tests (Debian's
 * libonnx-testdata) for every op fovea has, through runOp on the CPU backend,
 * and compares with ONNX's own tolerances. See test/onnx/cases.ts for which
 * cases are selected and why the others are not.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../lib/native';
import { type Case, describeSelection, selectCases } from './onnx/cases';
import { compareOutput } from './onnx/compare';
import { type AttrValue, decodeTensor, loadDataSets, loadModel, type OnnxModel } from './onnx/loader';
import { runNode } from './onnx/mapping';

const DATA_ROOT = process.env['ONNX_TESTDATA_DIR'] ?? '/usr/share/libonnx-testdata/data';
const MISSING =
  `ONNX backend test data not found at ${DATA_ROOT}: install the Debian package ` +
  '(apt-get install -y libonnx-testdata) or set ONNX_TESTDATA_DIR';
// libonnx-testdata 1.12 yields 107 cases; the floor catches a selection
// that silently shrinks (a renamed directory, a too-greedy exclusion rule).
const MIN_SELECTED = 100;

function formatAttr(v: AttrValue): string {
  if (typeof v === 'number' || typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.join(',')}]`;
  return `tensor[${v.dims.join(',')}]`;
}

/** e.g. `Conv {auto_pad="SAME_LOWER", strides=[2,2]} opset 11`, for failure reports. */
function describeNode(model: OnnxModel): string {
  const attrs = [...model.node.attrs].map(([k, v]) => `${k}=${formatAttr(v)}`).join(', ');
  return `${model.node.opType} {${attrs}} opset ${model.opset}`;
}

async function runCase(c: Case): Promise<void> {
  const model = loadModel(c.dir);
  const sets = loadDataSets(c.dir);
  if (sets.length === 0) throw new Error(`${c.id}: no test_data_set_N directory`);
  const problems: string[] = [];
  for (const set of sets) {
    if (set.inputs.length !== model.fedInputs.length) {
      throw new Error(`${set.name}: ${set.inputs.length} input files for graph inputs [${model.fedInputs}]`);
    }
    const values = new Map(model.initializers);
    model.fedInputs.forEach((name, k) => values.set(name, set.inputs[k]!));
    const outputs = await runNode(model, values, (name, inputs, attrs) => native().runOp(name, inputs, attrs)).catch(
      (e: unknown) => {
        const err = e as { message?: string; code?: string };
        throw new Error(`${describeNode(model)}: ${set.name}: ${err.code ?? 'error'}: ${err.message ?? String(e)}`, {
          cause: e,
        });
      },
    );
    if (set.outputs.length !== model.outputs.length) {
      throw new Error(`${set.name}: ${set.outputs.length} output files for graph outputs [${model.outputs}]`);
    }
    // output_K.pb belongs to graph output K, which the node may list in another order.
    const byName = new Map(model.node.outputs.map((name, k) => [name, outputs[k]] as const));
    model.outputs.forEach((name, k) => {
      const got = byName.get(name);
      const mismatch = got ? compareOutput(got, set.outputs[k]!) : { message: 'not produced' };
      if (mismatch) problems.push(`${set.name} output ${k} '${name}': ${mismatch.message}`);
    });
  }
  if (problems.length > 0) throw new Error(`${describeNode(model)}:\n  ${problems.join('\n  ')}`);
}

function conformanceSuite(): void {
  const { selected, excluded, staleExclusions } = selectCases(DATA_ROOT);
  const failures: string[] = [];
  let ran = 0;
  let passed = 0;

  describe('ONNX conformance', () => {
    afterAll(() => {
      console.log(
        [
          describeSelection(DATA_ROOT),
          `Excluded ${excluded.length} cases:`,
          ...excluded.map((e) => `  ${e.id}: ${e.reason}`),
          ...(failures.length > 0 ? [`Failed ${failures.length} cases:`, ...failures.map((f) => `  ${f}`)] : []),
          `ONNX conformance: ${selected.length} cases selected, ${ran} ran, ${passed} passed`,
        ].join('\n'),
      );
    });

    it(`selects at least ${MIN_SELECTED} cases, and every table exclusion names a real case`, () => {
      expect(selected.length).toBeGreaterThanOrEqual(MIN_SELECTED);
      expect(staleExclusions).toEqual([]);
    });

    for (const c of selected) {
      it(c.id, async () => {
        ran++;
        try {
          await runCase(c);
          passed++;
        } catch (e) {
          failures.push(`${c.id}: ${e instanceof Error ? e.message.replace(/\n/g, '\n    ') : String(e)}`);
          throw e;
        }
      });
    }
  });
}

// Every case relies on these decoding paths; the Debian data only uses
// raw_data, so the typed *_data fields are checked on hand-made protos.
describe('ONNX TensorProto decoding', () => {
  const DT = onnx.TensorProto.DataType;
  const roundTrip = (t: onnx.ITensorProto) =>
    decodeTensor(onnx.TensorProto.decode(onnx.TensorProto.encode(t).finish()));

  it('reads float_data, int32_data and int64_data', () => {
    expect(roundTrip({ dims: [2], dataType: DT.FLOAT, floatData: [1.5, -2] })).toEqual({
      dtype: 'float32', dims: [2], data: Float32Array.from([1.5, -2]),
    });
    expect(roundTrip({ dims: [1, 2], dataType: DT.INT32, int32Data: [7, -8] })).toEqual({
      dtype: 'int32', dims: [1, 2], data: Int32Array.from([7, -8]),
    });
    expect(roundTrip({ dims: [2], dataType: DT.INT64, int64Data: [3, -4] })).toEqual({
      dtype: 'int64', dims: [2], data: BigInt64Array.from([3n, -4n]),
    });
  });

  it('reads little-endian raw_data, including a scalar', () => {
    const raw = new Uint8Array(new Float32Array([0.25]).buffer);
    expect(roundTrip({ dims: [], dataType: DT.FLOAT, rawData: raw }).data).toEqual(Float32Array.from([0.25]));
    const big = BigInt64Array.from([-(2n ** 40n)]);
    expect(roundTrip({ dims: [1], dataType: DT.INT64, rawData: new Uint8Array(big.buffer) }).data).toEqual(big);
  });

  it('rejects other data types and a value count that does not match dims', () => {
    expect(() => roundTrip({ dims: [1], dataType: DT.DOUBLE, doubleData: [1] })).toThrow(/DOUBLE/);
    expect(() => roundTrip({ dims: [3], dataType: DT.FLOAT, floatData: [1, 2] })).toThrow(/2 values/);
  });
});

if (fs.existsSync(path.join(DATA_ROOT, 'node'))) {
  conformanceSuite();
} else if (process.env['CI']) {
  describe('ONNX conformance', () => {
    it('has the ONNX backend test data', () => {
      throw new Error(MISSING);
    });
  });
} else {
  console.warn(`Skipping the ONNX conformance suite: ${MISSING}`);
  describe.skip(`ONNX conformance (skipped: ${MISSING})`, () => {
    it('runs the ONNX backend node tests', () => undefined);
  });
}
