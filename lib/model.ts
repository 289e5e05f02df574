import { toFoveaError } from './errors';
import { native, type NativeModelSummary } from './native';

export type ModelSummary = NativeModelSummary;

/**
 * Opens a weights file and builds the network it describes with the native
 * loaders (off the event loop), checking every tensor against the
 * architecture. Rejects with FoveaError ERR_WEIGHTS naming the problem.
 */
export async function inspectModel(path: string): Promise<ModelSummary> {
  try {
    return await native().inspectModel(path);
  } catch (err) {
    throw toFoveaError(err);
  }
}
