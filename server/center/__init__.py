"""The supervision center's actions: rulings on disputes (uphold, reassign with assisting
units), cancel, note, reopen (:mod:`.actions`); what the city allows (:mod:`.rules`, pure);
moving a request between units (:mod:`.moves`)."""
