/**
 * Reads ONNX backend test cases: model.onnx (a ModelProto holding one node)
 * and the TensorProto files of each test_data_set_N, decoded with the
 * generated protobufjs code of the onnx-proto package.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';

export type OnnxTensor =
  | { dtype: 'float32'; dims: number[]; data: Float32Array }
  | { dtype: 'int32'; dims: number[]; data: Int32Array }
  | { dtype: 'int64'; dims: number[]; data: BigInt64Array };

/** INT and FLOAT attributes are numbers, INTS and FLOATS number arrays. */
export type AttrValue = number | string | number[] | OnnxTensor;

export interface OnnxNode {
  opType: string;
  /** '' marks an omitted optional input, as in the proto. */
  inputs: string[];
  outputs: string[];
  attrs: Map<string, AttrValue>;
}

export interface OnnxModel {
  /** Version of the default (ai.onnx) operator set. */
  opset: number;
  node: OnnxNode;
  initializers: Map<string, OnnxTensor>;
  /** Graph inputs without an initializer: what input_K.pb supplies, in order. */
  fedInputs: string[];
  outputs: string[];
}

export interface DataSet {
  name: string;
  inputs: OnnxTensor[];
  outputs: OnnxTensor[];
}

const DataType = onnx.TensorProto.DataType;
const AttrType = onnx.AttributeProto.AttributeType;

/** How protobufjs hands over an int64 field: a Long object, or a number. */
type Int64 = number | { toNumber(): number; toString(): string };

function toNumber(v: Int64): number {
  const n = typeof v === 'number' ? v : v.toNumber();
  if (!Number.isSafeInteger(n)) throw new Error(`integer ${v.toString()} is beyond 2^53`);
  return n;
}

function toBigInt(v: Int64): bigint {
  return BigInt(v.toString());
}

function numel(dims: number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

// raw_data is little-endian whatever the host; DataView also avoids the
// alignment a typed-array view over the decode buffer would need.
function fromRaw(dtype: number, raw: Uint8Array, count: number): OnnxTensor['data'] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const size = dtype === DataType.INT64 ? 8 : 4;
  if (raw.byteLength !== count * size) throw new Error(`raw_data has ${raw.byteLength} bytes for ${count} values`);
  if (dtype === DataType.FLOAT) return Float32Array.from({ length: count }, (_, i) => view.getFloat32(i * 4, true));
  if (dtype === DataType.INT32) return Int32Array.from({ length: count }, (_, i) => view.getInt32(i * 4, true));
  return BigInt64Array.from({ length: count }, (_, i) => view.getBigInt64(i * 8, true));
}

function fromTyped(t: onnx.ITensorProto): OnnxTensor['data'] {
  if (t.dataType === DataType.FLOAT) return Float32Array.from(t.floatData ?? []);
  if (t.dataType === DataType.INT32) return Int32Array.from(t.int32Data ?? []);
  return BigInt64Array.from((t.int64Data ?? []).map(toBigInt));
}

export function decodeTensor(t: onnx.ITensorProto): OnnxTensor {
  const dims = (t.dims ?? []).map(toNumber);
  const dtype = t.dataType ?? DataType.UNDEFINED;
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) throw new Error(`tensor '${t.name}': external data`);
  if (dtype !== DataType.FLOAT && dtype !== DataType.INT32 && dtype !== DataType.INT64) {
    throw new Error(`tensor '${t.name}': data type ${DataType[dtype] ?? dtype} is not float, int32 or int64`);
  }
  const count = numel(dims);
  const data = t.rawData && t.rawData.length > 0 ? fromRaw(dtype, t.rawData, count) : fromTyped(t);
  if (data.length !== count) throw new Error(`tensor '${t.name}': ${data.length} values for dims [${dims}]`);
  if (data instanceof Float32Array) return { dtype: 'float32', dims, data };
  if (data instanceof Int32Array) return { dtype: 'int32', dims, data };
  return { dtype: 'int64', dims, data };
}

export function readTensorFile(file: string): OnnxTensor {
  return decodeTensor(onnx.TensorProto.decode(fs.readFileSync(file)));
}

function decodeAttr(a: onnx.IAttributeProto): AttrValue {
  switch (a.type) {
    case AttrType.INT:
      return toNumber(a.i ?? 0);
    case AttrType.FLOAT:
      return a.f ?? 0;
    case AttrType.STRING:
      return Buffer.from(a.s ?? []).toString('utf8');
    case AttrType.INTS:
      return (a.ints ?? []).map(toNumber);
    case AttrType.FLOATS:
      return [...(a.floats ?? [])];
    case AttrType.TENSOR:
      return decodeTensor(a.t ?? {});
    default:
      throw new Error(`attribute '${a.name}': type ${AttrType[a.type ?? 0] ?? a.type} is not supported`);
  }
}

function defaultOpset(m: onnx.IModelProto): number {
  const entry = (m.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  if (!entry?.version) throw new Error('model imports no ai.onnx operator set');
  return toNumber(entry.version);
}

export function loadModel(caseDir: string): OnnxModel {
  const m = onnx.ModelProto.decode(fs.readFileSync(path.join(caseDir, 'model.onnx')));
  const g = m.graph ?? {};
  const nodes = g.node ?? [];
  if (nodes.length !== 1) throw new Error(`graph has ${nodes.length} nodes; only one-node graphs map to one op`);
  const n = nodes[0]!;
  if (n.domain && n.domain !== 'ai.onnx') throw new Error(`node domain '${n.domain}' is not ai.onnx`);
  const attrs = new Map((n.attribute ?? []).map((a) => [a.name ?? '', decodeAttr(a)] as const));
  const initializers = new Map((g.initializer ?? []).map((t) => [t.name ?? '', decodeTensor(t)] as const));
  return {
    opset: defaultOpset(m),
    node: { opType: n.opType ?? '', inputs: n.input ?? [], outputs: n.output ?? [], attrs },
    initializers,
    fedInputs: (g.input ?? []).map((i) => i.name ?? '').filter((name) => !initializers.has(name)),
    outputs: (g.output ?? []).map((o) => o.name ?? ''),
  };
}

// Numbered files name_0.pb, name_1.pb, ... up to the first gap.
function readNumbered(dir: string, prefix: string): OnnxTensor[] {
  const out: OnnxTensor[] = [];
  for (let k = 0; fs.existsSync(path.join(dir, `${prefix}_${k}.pb`)); k++) {
    out.push(readTensorFile(path.join(dir, `${prefix}_${k}.pb`)));
  }
  return out;
}

export function loadDataSets(caseDir: string): DataSet[] {
  return fs
    .readdirSync(caseDir)
    .filter((name) => /^test_data_set_\d+$/.test(name))
    .sort((a, b) => Number(a.slice(14)) - Number(b.slice(14)))
    .map((name) => {
      const dir = path.join(caseDir, name);
      return { name, inputs: readNumbered(dir, 'input'), outputs: readNumbered(dir, 'output') };
    });
}
