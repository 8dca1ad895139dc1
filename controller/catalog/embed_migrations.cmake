# Reads controller/catalog/migrations/NNNN_name.sql into a generated C++ file
# at configure time; editing or adding a .sql file re-runs configure.
function(cairn_embed_migrations dir out)
  file(GLOB files CONFIGURE_DEPENDS ${dir}/*.sql)
  list(SORT files)
  set(entries "")
  foreach(f ${files})
    get_filename_component(base ${f} NAME_WE)
    if(NOT base MATCHES "^([0-9][0-9][0-9][0-9])_([a-z0-9_]+)$")
      message(FATAL_ERROR "migration '${f}' must be named NNNN_name.sql (lowercase name)")
    endif()
    set(label ${CMAKE_MATCH_2})
    # Drop leading zeros: "0010" would be an octal literal in C++.
    string(REGEX REPLACE "^0+" "" number ${CMAKE_MATCH_1})
    file(READ ${f} sql)
    string(FIND "${sql}" ")cairn_sql" clash)
    if(NOT clash EQUAL -1)
      message(FATAL_ERROR "migration '${f}' contains the raw-string delimiter ')cairn_sql'")
    endif()
    string(APPEND entries "    {${number}, \"${label}\", R\"cairn_sql(${sql})cairn_sql\"},\n")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${f})
  endforeach()
  file(CONFIGURE OUTPUT ${out} CONTENT "// Generated from controller/catalog/migrations by embed_migrations.cmake; do not edit.
#include \"controller/catalog/migrations.h\"

namespace cairn::catalog {

std::span<const Migration> embedded_migrations() {
  static const Migration list[] = {
@entries@  };
  return list;
}

}  // namespace cairn::catalog
" @ONLY)
endfunction()
