from agentos_cli.main import app

app()
