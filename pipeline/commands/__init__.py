"""One module per `glide` subcommand; see `pipeline.cli`."""
