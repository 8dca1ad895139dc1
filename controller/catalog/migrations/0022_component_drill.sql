-- 0022: whether a component's driver has a restore drill, as its agent
-- declares it (ComponentInfo.has_drill): a drill picks only those, and a
-- scheduled drill leaves the others out by name. Every driver before this
-- had a drill, so existing components keep 1 until their agent says.
ALTER TABLE agent_components ADD COLUMN has_drill INTEGER NOT NULL DEFAULT 1 CHECK (has_drill IN (0, 1));
