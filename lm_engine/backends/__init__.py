"""Chat backends (implementations of lm_engine.chat.ChatBackend). Import the submodule you need."""
