"""Built-in plugins that need no extra dependency. Each module is one plugin, registered
through its own entry point in the ``taskloom`` group like any third-party plugin."""
