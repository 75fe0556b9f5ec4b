#include "module_interface.h"

module_init_args_t init_args;
init_args.version = MODULE_INIT_ARGS_VERSION_CURRENT;
init_args.log = your_log_function;  // or NULL
init_args.get_time = your_get_time_function;  // or NULL
init_args.user_data = your_user_data;  // or NULL

module_error_t err = module_loader_load(loader, "path/to/module.so", &init_args);
if (err != MODULE_ERR_SUCCESS) {
    // handle error
}
