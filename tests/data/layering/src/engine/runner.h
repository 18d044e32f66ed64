#pragma once
#include "io/reader.h"
