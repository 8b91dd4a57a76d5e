// Op resolver for mbv3_small_int8_tflm: exactly the 7 builtin ops the model uses.
#ifndef MBV3_SMALL_INT8_TFLM_OP_RESOLVER_H_
#define MBV3_SMALL_INT8_TFLM_OP_RESOLVER_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

using mbv3_small_int8_tflm_OpResolver = tflite::MicroMutableOpResolver<7>;

inline TfLiteStatus mbv3_small_int8_tflm_RegisterOps(mbv3_small_int8_tflm_OpResolver& resolver) {
  if (resolver.AddAdd() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddConv2D() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddDepthwiseConv2D() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddHardSwish() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddMean() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddMul() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddReshape() != kTfLiteOk) return kTfLiteError;
  return kTfLiteOk;
}

#endif  // MBV3_SMALL_INT8_TFLM_OP_RESOLVER_H_
