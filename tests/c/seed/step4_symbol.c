void *symbol;
err = module_loader_get_symbol(loader, "function_name", &symbol);
// call function through symbol
