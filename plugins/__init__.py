"""Built-in provider plugins, registered through the `outbound_call_exporter` entry points."""
