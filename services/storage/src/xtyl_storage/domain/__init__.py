"""Pure logic of the storage service: names and keys, part sizing, content types, cursors."""
