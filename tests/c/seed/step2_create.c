module_loader_t *loader = module_loader_create();
