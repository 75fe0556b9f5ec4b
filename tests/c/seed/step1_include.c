#include "module_loader.h"
