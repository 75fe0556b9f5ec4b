module_loader_unload(loader);
module_loader_destroy(loader);
