export { FoveaError, type FoveaErrorCode } from './errors';
export { info, formatInfo, memoryStats, version, type FoveaInfo } from './info';
export type { CudaDeviceInfo, DeviceMemoryStats, MemoryStats } from './native';
export { inspectModel, type ModelSummary } from './model';
export { decodeMask, encodeMask, maskArea, maskIou, maskToBox, type Bitmap, type Rle } from './rle';
export { decodeImage, type DecodeOptions, type ImageInput, type RawImage, type RgbImage } from './image';
export { instanceColor, maskToPng, renderOverlay, type MaskPngOptions, type OverlayInstance, type OverlayOptions, type Rgb, type Rgba } from './render';
export { segment, createSegmenter, Segmenter, type Instance, type SegmentResult, type StreamOptions, type Timings } from './segment';
export type { SegmentOptions, SegmenterOptions, Mode, DeviceSpec, ProgressEvent, Stage } from './options';
export {
  annotationToRle,
  evaluateCoco,
  formatCocoStats,
  toCocoResults,
  type CocoAnnotation,
  type CocoDataset,
  type CocoEvalOptions,
  type CocoEvalResult,
  type CocoResult,
} from './coco';
export { exportOnnx, exportOnnxFile, ONNX_PARTS, ONNX_OPSET, type OnnxPart, type OnnxExportOptions } from './onnx-export';
