#pragma once
#include "engine/runner.h"  // backwards: io may not use engine
