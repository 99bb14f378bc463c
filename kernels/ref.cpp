#include "nk/blocks.h"
