/* The float loops for the portable path (baseline instruction set). */
#define OB_SUFFIX scalar
#include "float_ops.h"
