#include "test/harness.h"
