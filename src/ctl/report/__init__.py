"""Reading runs back: ``ctl eval`` and the per-run console table.

``runs`` finds and reads run folders; ``tables``, ``coldstart`` and ``significance`` compute the
records of the paper's tables (``records`` defines their shape); ``views`` lays records out as
tables that ``render`` prints (rich, Markdown) or writes (JSON, CSV); ``plots`` draws the PNG
figures; ``cli`` is ``ctl eval``; ``console.print_run`` is the table ``ctl train`` prints.
"""
