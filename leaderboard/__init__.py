"""Result-file schema, validator and (to come) ranking and page builder."""
