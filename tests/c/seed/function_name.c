/* Linked into a second build of the seed's example module (example_module.c, unchanged), so
 * that the seed host's "function_name" look-up finds something to call. */
int function_name(int x);

int function_name(int x)
{
    return x + 22;
}
