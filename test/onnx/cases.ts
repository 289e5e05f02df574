/**
 * Which ONNX backend test cases the conformance suite runs. A case is
 * considered when its directory name matches an INCLUDE pattern; it is then
 * excluded either by a name rule (a whole family fovea has no op for) or by
 * the EXCLUDED table (one case our mapping cannot express). Everything else
 * is selected and must pass.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Case {
  /** '<suite dir>/<case dir>', e.g. 'node/test_conv_with_strides_padding'. */
  id: string;
  dir: string;
}

export interface Exclusion {
  id: string;
  reason: string;
}

const INCLUDE: ReadonlyArray<{ suite: string; pattern: RegExp }> = [
  {
    suite: 'node',
    pattern: new RegExp(
      '^test_(basic_)?conv|^test_(maxpool|averagepool|gemm|relu|sigmoid|softmax|resize|concat|add|batchnorm|' +
        'roialign|nonmaxsuppression|maxroipool)(_|$)',
    ),
  },
  {
    suite: 'pytorch-converted',
    pattern: /^test_(Conv|AvgPool|MaxPool|BatchNorm|ReLU$|Sigmoid$|Softmax$|softmax_|Linear)/,
  },
  { suite: 'pytorch-operator', pattern: /^test_operator_(conv|concat2)$/ },
];

// First match gives the reason.
const RULES: ReadonlyArray<{ pattern: RegExp; reason: string }> = [
  { pattern: /convinteger/i, reason: 'integer convolution: fovea ops are float32' },
  { pattern: /convtranspose/i, reason: 'transposed convolution: not a fovea op' },
  { pattern: /(pool|conv)_?[13]d/i, reason: '1-D/3-D convolution or pooling: fovea has 2-D windows only' },
  { pattern: /uint8/, reason: 'uint8 tensors: fovea ops are float32' },
  { pattern: /training_mode/, reason: 'training-mode BatchNormalization: fovea is inference only' },
  { pattern: /with_argmax/, reason: 'MaxPool Indices output: not a fovea op' },
  {
    pattern: /^test_resize_.*(cubic|nearest|tf_crop)/,
    reason: 'Resize mode cubic/nearest or tf_crop_and_resize: fovea resizes bilinearly',
  },
  { pattern: /_expanded$/, reason: 'function body expanded into several nodes: not one op' },
];

/** Single cases the mapping cannot express, each with why. */
const EXCLUDED: ReadonlyMap<string, string> = new Map([
  ['node/test_add_bcast', 'broadcasting Add ([3,4,5] + [5]): fovea add takes two tensors of one shape'],
  ['pytorch-converted/test_Linear_no_bias', 'two nodes (Transpose + MatMul): not one op'],
]);

export function describeSelection(root: string): string {
  return [
    `ONNX conformance selection (data: ${root}):`,
    ...INCLUDE.map((r) => `  include ${r.suite}/ cases matching ${r.pattern}`),
    ...RULES.map((r) => `  exclude names matching ${r.pattern}: ${r.reason}`),
    `  exclude ${EXCLUDED.size} single cases listed in test/onnx/cases.ts (EXCLUDED)`,
  ].join('\n');
}

export function selectCases(root: string): { selected: Case[]; excluded: Exclusion[]; staleExclusions: string[] } {
  const selected: Case[] = [];
  const excluded: Exclusion[] = [];
  const seen = new Set<string>();
  for (const { suite, pattern } of INCLUDE) {
    const suiteDir = path.join(root, suite);
    const names = fs.existsSync(suiteDir) ? fs.readdirSync(suiteDir).sort() : [];
    for (const name of names.filter((n) => pattern.test(n))) {
      const id = `${suite}/${name}`;
      seen.add(id);
      const reason = RULES.find((r) => r.pattern.test(name))?.reason ?? EXCLUDED.get(id);
      if (reason) excluded.push({ id, reason });
      else selected.push({ id, dir: path.join(suiteDir, name) });
    }
  }
  // A table entry naming no considered case is out of date: report it.
  const staleExclusions = [...EXCLUDED.keys()].filter((id) => !seen.has(id));
  return { selected, excluded, staleExclusions };
}
