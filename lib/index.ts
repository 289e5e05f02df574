export { FoveaError, type FoveaErrorCode } from './errors';
export { info, formatInfo, version, type FoveaInfo } from './info';
export type { CudaDeviceInfo } from './native';
